module github.com/delegations/delegations

go 1.26

require (
	github.com/cespare/xxhash/v2 v2.3.0
	github.com/looplab/fsm v1.0.3
	github.com/oklog/run v1.2.0
	go.etcd.io/bbolt v1.5.0
)

require golang.org/x/sys v0.45.0 // indirect
