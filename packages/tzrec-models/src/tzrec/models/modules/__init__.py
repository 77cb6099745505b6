"""Neural-network building blocks: MLP, towers, activations and sequence encoders."""
