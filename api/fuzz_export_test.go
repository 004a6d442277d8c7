package api

import "github.com/footfall/footfall/api/internal/transport"

// DecodeInboundForTest runs the WebSocket message decoder on data with the
// default size limit, for the fuzz targets outside the package: it returns
// the message's type and token, or the code of the error the client gets.
func DecodeInboundForTest(data []byte) (typ, token, code string) {
	m, err := decodeInbound(data, DefaultLimits.MaxMessageBytes)
	if err != nil {
		return "", "", err.code
	}
	return m.Type, m.Token, ""
}

// SSEMaxReplay is the most events an SSE resume replays; a longer gap gets
// a snapshot instead.
const SSEMaxReplay = transport.SSEMaxReplay
