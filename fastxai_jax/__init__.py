"""fastxai_jax."""
