"""Off-policy evaluation: what a target policy would have earned on logged traffic.

Floor: above ``pipeline`` (it reads logs with the pipeline's loader and join, and builds learners from
the registry or from checkpoints); only ``banditloop.commands.evaluate`` imports it.
"""
