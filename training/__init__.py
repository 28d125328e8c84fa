"""Quality-tuning trainer and evaluation, on diffusers and accelerate."""
