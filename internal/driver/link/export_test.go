package link

// FailBetweenEnds makes CreateLink fail with err after configuring A's end,
// before B's (rollback tests); the returned func removes the fault.
func FailBetweenEnds(err error) (restore func()) {
	testHookBetweenEnds = func() error { return err }
	return func() { testHookBetweenEnds = nil }
}
