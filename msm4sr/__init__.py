"""MSM4SR (MP4SR): multimodal pre-training for sequential recommendation."""
