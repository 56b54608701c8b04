"""The web gallery's pages, stylesheet and script, as strings: Jinja2 templates (every value escaped) in a DictLoader,
so the package needs no data files and no build step."""

from __future__ import annotations

import jinja2

BASE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{% block title %}easel{% endblock %} · easel</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="data:,">
<script src="/static/app.js" defer></script>
{% block head %}{% endblock %}
</head>
<body>
<header>
  <a class="brand" href="/gallery">easel</a>
  {% if viewer %}<span class="who">{{ viewer.name }}{% if viewer.admin %} · admin: everyone's jobs{% endif %}</span>{% endif %}
</header>
{% if said %}<p class="said{% if said.error %} error{% endif %}" role="status">{{ said.text }}</p>{% endif %}
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

ERROR = """\
{% extends "base.html" %}
{% block title %}{{ heading }}{% endblock %}
{% block main %}
<h1>{{ heading }}</h1>
<p>{{ message }}</p>
{% endblock %}
"""

# Where a link opened from another site lands: a SameSite=Strict cookie set by the answer to a cross-site click is
# not sent on a redirect of that same navigation, so this page moves on by itself, as a navigation of our own.
ARRIVE = """\
{% extends "base.html" %}
{% block title %}opening your gallery{% endblock %}
{% block head %}<meta http-equiv="refresh" content="0; url=/gallery">{% endblock %}
{% block main %}
<p>Opening your gallery… <a href="/gallery">continue</a></p>
{% endblock %}
"""

GRID = """\
{% extends "base.html" %}
{% block title %}gallery{% endblock %}
{% macro choice(name, label, options, chosen, anything) -%}
<label>{{ label }}
<select name="{{ name }}">
  <option value="">{{ anything }}</option>
  {% for value, text in options %}<option value="{{ value }}"{% if value == chosen %} selected{% endif %}>{{ text }}</option>
  {% endfor %}
</select></label>
{%- endmacro %}
{% block main %}
<form class="filters" method="get" action="/gallery">
  <label>search <input type="search" name="q" value="{{ filters.q }}" placeholder="words of a prompt"></label>
  {% if viewer.admin %}{{ choice("person", "person", people, filters.person, "everyone") }}{% endif %}
  {{ choice("kind", "kind", kinds, filters.kind, "any") }}
  {{ choice("model", "model", models, filters.model, "any") }}
  {{ choice("lora", "LoRA", loras, filters.lora, "any") }}
  {{ choice("status", "status", statuses, filters.status, "any") }}
  <label>from <input type="date" name="since" value="{{ filters.since }}"></label>
  <label>to <input type="date" name="until" value="{{ filters.until }}"></label>
  <label class="tick"><input type="checkbox" name="starred" value="1"{% if filters.starred %} checked{% endif %}> starred only</label>
  <button type="submit">show</button>
  <a href="/gallery">clear</a>
</form>
{% if cards %}
<p class="count">{{ shown }}</p>
<ul class="grid">
{% for card in cards %}
  <li class="card">
    <a href="/job/{{ card.id }}">
      {% if card.thumb %}<img src="{{ card.thumb }}" loading="lazy" width="{{ card.width }}" height="{{ card.height }}" alt="#{{ card.id }}">
      {% else %}<span class="nothumb">{{ card.status }}</span>{% endif %}
      <span class="caption">#{{ card.id }} {{ card.title }}</span>
    </a>
    <span class="meta">{{ card.kind }} · {{ card.status }} · {{ card.when }}{% if card.owner %} · {{ card.owner }}{% endif %}{% if card.images > 1 %} · {{ card.images }} images{% endif %}{% if card.starred %} · <span class="star" title="starred">★</span>{% endif %}</span>
  </li>
{% endfor %}
</ul>
{% else %}
<p class="empty">{{ empty }}</p>
{% endif %}
<nav class="pages">
  {% if newest %}<a href="{{ newest }}">← newest</a>{% endif %}
  {% if older %}<a href="{{ older }}" rel="next">older →</a>{% endif %}
</nav>
{% endblock %}
"""

JOB = """\
{% extends "base.html" %}
{% block title %}#{{ job.id }}{% endblock %}
{% macro csrf_field() %}<input type="hidden" name="csrf" value="{{ csrf }}">{% endmacro %}
{% block main %}
<h1>#{{ job.id }} {{ heading }}</h1>
<p class="meta">{{ job.status }} · {{ kind }} · {{ summary }}{% if owner %} · by {{ owner }}{% endif %}{% if starred %} · <span class="star">★ starred</span>{% endif %}</p>
{% if error %}<p class="said error">{{ error }}</p>{% endif %}
{% if ancestors or children %}
<nav class="family">
  {% if ancestors %}<p>from {% for other in ancestors %}<a href="/job/{{ other.id }}">#{{ other.id }} {{ other.label }}</a>{% if not loop.last %} → {% endif %}{% endfor %} → #{{ job.id }}</p>{% endif %}
  {% if children %}<p>made from it: {% for other in children %}<a href="/job/{{ other.id }}">#{{ other.id }} {{ other.label }}</a>{% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
</nav>
{% endif %}
<div class="actions">
  <form method="post" action="/job/{{ job.id }}/rerun">{{ csrf_field() }}<button type="submit">rerun</button></form>
  {% if more_steps %}<form method="post" action="/job/{{ job.id }}/more">{{ csrf_field() }}<button type="submit">5× steps ({{ more_steps }})</button></form>{% endif %}
  <form method="post" action="/job/{{ job.id }}/star">{{ csrf_field() }}<input type="hidden" name="on" value="{{ 0 if starred else 1 }}"><button type="submit">{{ "unstar" if starred else "☆ star" }}</button></form>
  <a class="danger" href="/job/{{ job.id }}/delete">delete…</a>
</div>
{% if video %}
<h2>video</h2>
<video controls preload="metadata" src="/video/{{ job.id }}"{% if size %} width="{{ size[0] }}" height="{{ size[1] }}"{% endif %}></video>
<h2>frames</h2>
{% endif %}
<div class="{{ 'frames' if video else 'images' }}">
{% for image in images %}
  <figure>
    <a href="{{ image.url }}"><img src="{{ image.url }}" alt="image {{ image.k }} of #{{ job.id }}"{% if size %} width="{{ size[0] }}" height="{{ size[1] }}"{% endif %}></a>
    <figcaption>
      <span>{{ "frame" if video else "image" }} {{ image.k }} · seed {{ image.seed }}</span>
      <form method="post" action="/job/{{ job.id }}/upscale">{{ csrf_field() }}<input type="hidden" name="image" value="{{ image.k }}"><button type="submit">upscale</button></form>
      <form method="post" action="/job/{{ job.id }}/vary">{{ csrf_field() }}<input type="hidden" name="image" value="{{ image.k }}"><button type="submit" name="variation" value="subtle">vary (subtle)</button> <button type="submit" name="variation" value="strong">vary (strong)</button></form>
    </figcaption>
    <div class="parameters">
      <div class="bar"><span>parameters</span> <button type="button" class="copy" data-copy="parameters-{{ image.k }}">Copy</button></div>
      <pre id="parameters-{{ image.k }}">{{ image.parameters }}</pre>
    </div>
  </figure>
{% endfor %}
</div>
{% if not images %}
<div class="parameters">
  <div class="bar"><span>parameters</span> <button type="button" class="copy" data-copy="parameters-0">Copy</button></div>
  <pre id="parameters-0">{{ parameters }}</pre>
</div>
{% endif %}
<h2>everything recorded</h2>
<table class="fields">
{% for section, rows in fields %}
  <tbody>
  <tr><th colspan="2">{{ section }}</th></tr>
  {% for name, value in rows %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>
  {% endfor %}
  </tbody>
{% endfor %}
</table>
{% endblock %}
"""

CONFIRM = """\
{% extends "base.html" %}
{% block title %}delete #{{ job.id }}?{% endblock %}
{% block main %}
<h1>delete #{{ job.id }} and its files?</h1>
<p>{{ heading }} — {{ files }}. This cannot be undone.</p>
<form method="post" action="/job/{{ job.id }}/delete">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <button type="submit" class="danger">delete #{{ job.id }}</button>
  <a href="/job/{{ job.id }}">keep it</a>
</form>
{% endblock %}
"""

TEMPLATES = {
    "base.html": BASE, "error.html": ERROR, "arrive.html": ARRIVE, "grid.html": GRID, "job.html": JOB,
    "confirm.html": CONFIRM,
}

# The copy buttons: the text of the <pre> a button names. Without a secure context (plain http on a LAN address)
# browsers have no clipboard API, so the text is selected for Ctrl+C instead.
SCRIPT = """\
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) { return; }
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) { return; }
  var label = button.textContent;
  function say(text) {
    button.textContent = text;
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }
  function select() {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    say("Selected: press Ctrl+C");
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.textContent).then(function () { say("Copied"); }, select);
  } else {
    select();
  }
});
"""

STYLE = """\
:root { color-scheme: light dark; --line: #8884; --muted: #888; --accent: #3b6ea8; --danger: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; }
header { display: flex; gap: 1rem; align-items: baseline; padding: .6rem 1rem; border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; font-size: 1.15rem; text-decoration: none; color: inherit; }
header .who { color: var(--muted); }
main { padding: 1rem; max-width: 1400px; margin: 0 auto; }
h1 { font-size: 1.3rem; margin: .2rem 0 .4rem; overflow-wrap: anywhere; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
a { color: var(--accent); }
.meta, .count, .empty { color: var(--muted); }
.said { padding: .5rem .8rem; border-left: 4px solid var(--accent); background: #8881; margin: .6rem 1rem; }
.said.error { border-color: var(--danger); }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
.filters label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
.filters label.tick { flex-direction: row; gap: .3rem; align-items: center; }
.filters input, .filters select, button { font: inherit; }
.grid { list-style: none; padding: 0; margin: 0; display: grid; gap: .8rem;
        grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); }
.card a { display: block; text-decoration: none; color: inherit; }
.card img, .nothumb { display: block; width: 100%; height: auto; aspect-ratio: 1; object-fit: contain;
                      background: #8882; border-radius: 4px; }
.nothumb { display: flex; align-items: center; justify-content: center; color: var(--muted); }
.caption { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; margin-top: .25rem; }
.card .meta { font-size: .8rem; display: block; }
.star { color: #d4a017; }
.pages { display: flex; gap: 1.5rem; margin: 1.2rem 0; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .8rem 0; }
.actions form, figcaption form { display: inline; }
.danger { color: var(--danger); }
.family p { margin: .2rem 0; }
.images, .frames { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(min(100%, 420px), 1fr)); }
.frames { grid-template-columns: repeat(auto-fill, minmax(min(100%, 260px), 1fr)); }
figure { margin: 0; }
figure img, video { max-width: 100%; height: auto; display: block; background: #8882; }
figcaption { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: .4rem 0; }
.parameters .bar { display: flex; justify-content: space-between; align-items: center; font-size: .85rem; color: var(--muted); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #8881; padding: .6rem; border-radius: 4px;
      font-size: .85rem; margin: .3rem 0; }
.fields { border-collapse: collapse; width: 100%; font-size: .9rem; }
.fields th { text-align: left; padding-top: .8rem; }
.fields td { border-top: 1px solid var(--line); padding: .2rem .5rem .2rem 0; vertical-align: top;
             overflow-wrap: anywhere; }
.fields td:first-child { color: var(--muted); white-space: nowrap; width: 12rem; }
"""


def environment() -> jinja2.Environment:
    """The templates, every value HTML-escaped; a name a page forgot to pass is an error, not an empty string."""
    return jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
