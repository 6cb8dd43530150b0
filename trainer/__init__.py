"""Train the Digit CNN on MNIST and write a safetensors checkpoint plus metrics."""
