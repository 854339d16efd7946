"""One module per ``banditloop`` sub-command; each exposes ``register(subparsers)``."""

#: modules registered by ``pipeline.cli`` in this order (the help lists them so)
COMMAND_MODULES = (
    "pipeline.commands.simulate",
    "pipeline.commands.replay",
    "pipeline.commands.models",
    "pipeline.commands.learners",
    "pipeline.commands.broker",
    "pipeline.commands.produce",
    "pipeline.commands.consume",
    "pipeline.commands.serve",
    "pipeline.commands.demo",
)
