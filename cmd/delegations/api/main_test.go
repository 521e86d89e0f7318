package api

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeHistoryTemplates()
	os.Exit(code)
}
