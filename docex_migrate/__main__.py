"""``python -m docex_migrate`` and the ``docex-migrate`` command.

The command-line modules (typer, rich) are imported inside main(): spawned ``--jobs`` workers
re-import the command's script as their ``__mp_main__``, and must not pay for the CLI."""


def main() -> None:
    import gc

    from .cli import main as run

    # What the imports built lives as long as the process: keeping it out of every later
    # collection saved ~3% of a 1,000-tenant upgrade.
    gc.freeze()
    run()


if __name__ == "__main__":
    main()
