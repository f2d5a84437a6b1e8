"""Device-tree fixtures: a model of the tcc807x sub-core tree, the seed nodes, and an FDT reader."""
