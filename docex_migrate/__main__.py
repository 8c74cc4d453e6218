"""``python -m docex_migrate`` and the ``docex-migrate`` command.

The command-line modules (typer, rich) are imported inside main(): spawned ``--jobs`` workers
re-import the command's script as their ``__mp_main__``, and must not pay for the CLI."""


def main() -> None:
    from .cli import main as run

    run()


if __name__ == "__main__":
    main()
