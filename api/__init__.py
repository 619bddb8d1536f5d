"""HTTP and WebSocket API: thin routes over Kafka, Redis and MongoDB."""
