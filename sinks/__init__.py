"""Sinks: batched, bounded, retrying writers from streams to MongoDB and RabbitMQ."""
