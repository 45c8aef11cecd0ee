"""Service clients behind small interfaces; local and cloud forms differ by configuration.

Google's client libraries find the local emulators through their own environment
variables (PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, STORAGE_EMULATOR_HOST), so the
code that runs on Dataflow is the code the tests run.
"""
