module fleetstream/benchmarks/phonefleet

go 1.24
