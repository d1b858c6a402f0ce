"""`python -m seqcohort` == the `seqcohort` command."""

from seqcohort.cli import main

main()
