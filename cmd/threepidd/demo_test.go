package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInteractive: only a terminal may stop the demo with Enter; /dev/null (as
// nohup and service managers give), files and pipes must not end it at once.
func TestInteractive(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "input"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()

	for name, f := range map[string]*os.File{"/dev/null": devNull, "file": file, "pipe": pipeR} {
		if interactive(f) {
			t.Errorf("interactive(%s) = true, want false", name)
		}
	}
}
