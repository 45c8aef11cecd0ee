"""Traffic generator: simulated camera events for the section-speed pipeline.

`python -m generator` simulates vehicles crossing one section and publishes their
detections to Pub/Sub in real time, writes them to a JSON-lines file (--output), or
replays such a file (--replay); --truth writes the verdict each vehicle should get.
"""
