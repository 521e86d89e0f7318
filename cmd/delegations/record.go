package main

import (
	"flag"
	"fmt"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// applyToID is the body of the verbs that take one delegation id and print
// its record: parse, open the store, run cmd, print.
func applyToID(e *env, fs *flag.FlagSet, args []string, cmd func(s *projection.Store, id string) (fsm.Delegation, error)) error {
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	d, err := cmd(s, id)
	if err != nil {
		return err
	}
	return printRecord(e, d)
}

// parseID parses a verb whose only argument is a delegation id.
func parseID(e *env, fs *flag.FlagSet, args []string) (string, error) {
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return "", err
	}
	return idArg(rest[0])
}

// printRecord reports the outcome of a lifecycle verb: the record as JSON,
// or "<id> <status>".
func printRecord(e *env, d fsm.Delegation) error {
	if e.json {
		return writeJSON(e.stdout, d)
	}
	_, err := fmt.Fprintf(e.stdout, "%s %s\n", d.ID, d.State)
	return err
}
