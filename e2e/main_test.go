package e2e

import (
	"os"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	testutil.RemoveRaceBinary()
	os.Exit(code)
}
