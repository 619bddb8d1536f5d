"""Fleetstream: real-time logistics on Kafka, Faust, Redis, MongoDB and RabbitMQ."""

__version__ = "0.1.0"
