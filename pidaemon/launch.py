"""The process entry (`pi-infer`, `python -m pidaemon`): record signals, then import the rest."""

from pidaemon import earlysignals


def main() -> None:
    earlysignals.install()  # before the imports below, which take from 0.2 s to seconds
    from pidaemon.cli import entry

    entry()
