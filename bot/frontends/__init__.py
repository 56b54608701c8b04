"""Where people talk to easel. Each frontend translates its platform to and from the Service, nothing more.

    console.py              the terminal: a prompt with the running job's progress beneath it, or a pipe
    chat.py                 what the chat frontends share: job events, paced progress, delivery and replay
    discord.py              Discord: the client, answers and results; discord_commands.py the slash commands,
                            the command tree's hooks and the buttons; discord_access.py who may use it
    telegram.py             Telegram: updates in, status messages and results; telegram_access.py who may use
                            it (PTB filters), telegram_sending.py what goes out, telegram_uploads.py what comes in
    pacing.py               the pace of progress edits and sends, flood control, failures logged sparingly
    results.py              images and clips in (checked, read under a cap) and out (fitted to a platform's limits:
                            pictures, and an animation's video)
    connection.py           reaching a platform at start-up: wait out an outage, stop on a refused token

Only the discord*.py modules import discord, only the telegram*.py modules import telegram.
"""
