"""Random faces: our own StyleGAN2 generator, loadable from NVIDIA's weights."""
