package httpapi

// growStack makes the calling goroutine's stack big enough for an agent
// write (decoding a report, the registry's JSON and bbolt) while the stack
// is still shallow. A connection's goroutine starts with a small stack and
// grows it on demand, copying it whole and fixing every frame's pointers
// each time; an agent write grows it two or three times deep inside
// encoding/json, where copying the stack cost 7–11% of the server's CPU
// in a 10,000-agent all-at-once deploy (copystack, pprof). Growing it
// once here, a few frames from the top, copies little.
//
//go:noinline
func growStack(i int) byte {
	var frame [writeStack]byte
	frame[i%writeStack] = 1
	return frame[(i*7)%writeStack]
}

// writeStack is the frame growStack takes: the stack an agent write needs,
// less what is already in use when it is called.
const writeStack = 12 << 10

// stackIndex keeps growStack's frame from being optimised away (it is
// only read).
var stackIndex = 1
