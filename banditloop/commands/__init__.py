"""One module per ``banditloop`` sub-command; each exposes ``register(subparsers)``."""

#: modules registered by ``banditloop.cli`` in this order (the help lists them so)
COMMAND_MODULES = (
    "banditloop.commands.simulate",
    "banditloop.commands.replay",
    "banditloop.commands.evaluate",
    "banditloop.commands.models",
    "banditloop.commands.learners",
    "banditloop.commands.broker",
    "banditloop.commands.produce",
    "banditloop.commands.consume",
    "banditloop.commands.serve",
    "banditloop.commands.demo",
)
