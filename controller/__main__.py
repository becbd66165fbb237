import gc

gc.disable()  # start-up (imports) makes no garbage worth a collection: cli.started() freezes and re-enables it

from controller.cli.main import run  # noqa: E402

run()
