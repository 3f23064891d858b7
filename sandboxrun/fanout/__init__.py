"""Fan-out: many tasks, a dependency graph, one group, one report, one integration branch."""
