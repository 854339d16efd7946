"""Off-policy evaluation: what a target policy would have earned on logged traffic.

Floor: above ``serving`` and below ``commands`` (it reads logs with the pipeline's loader and join,
builds learners from the registry, and merges a checkpointed model's shards with the scorer's
``merge_checkpoints``); only ``banditloop.commands.evaluate`` imports it.
"""
