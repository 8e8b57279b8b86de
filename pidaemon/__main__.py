"""`python -m pidaemon` is the same as the `pi-infer` command."""

from pidaemon.launch import main

main()
