package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// TestUsageListsEveryCommand checks that "threepidd help" and "threepidd -h"
// (the default command's help) name every subcommand the binary has.
func TestUsageListsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		wantCode := 0
		if args[0] == "-h" {
			wantCode = 2 // flag.ErrHelp, as every subcommand's -h
		}
		if code != wantCode {
			t.Errorf("threepidd %s: exit status %d, want %d", args[0], code, wantCode)
		}
		for name := range commands {
			if !strings.Contains(out, "\n  "+name+" ") {
				t.Errorf("threepidd %s does not list %q:\n%s", args[0], name, out)
			}
		}
	}
}

// TestSubcommandUsageNamesEveryFlag checks that each subcommand's usage line
// names each of its flags, so the one-line summary and the flags agree.
func TestSubcommandUsageNamesEveryFlag(t *testing.T) {
	for name, flags := range map[string][]string{
		"generate-key": {"-out", "-format", "-id"},
		"notify":       {"-key", "-origin", "-destination", "-to", "-threepid", "-mxid", "-deleted", "-medium"},
		"import":       {"-config", "-dendrite-db"},
		"reconcile":    {"-config"},
		"demo":         {"-listen", "-v"},
		"serve":        {"-config"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{name, "-h"}, &stdout, &stderr); code != 2 {
			t.Errorf("threepidd %s -h: exit status %d, want 2", name, code)
		}
		// The summary: the first line, or serve's entry in the command list.
		usageLine, _, _ := strings.Cut(stderr.String(), "\n")
		if name == "serve" {
			_, rest, _ := strings.Cut(stderr.String(), "\n  serve ")
			usageLine, _, _ = strings.Cut(rest, "\n")
		}
		words := strings.FieldsFunc(usageLine, func(r rune) bool { return strings.ContainsRune(" []()|", r) })
		for _, f := range flags {
			if !slices.Contains(words, f) {
				t.Errorf("threepidd %s: usage line %q does not name %s", name, usageLine, f)
			}
		}
	}
}
