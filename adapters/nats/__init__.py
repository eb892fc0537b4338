"""NATS JetStream: the delivery jobs stream, the relay that fills it and the workers that drain it."""
