from subnets.cli import entry

entry()
