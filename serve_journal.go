//go:build linux

package main

import (
	"net/netip"
	"strconv"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

func logResult(log *logger, res tlsbridge.Result) {
	f := resultFields(res)
	if res.RsyncExit < 0 {
		log.Event(true, f, "%v", res.Err)
		return
	}
	log.Event(res.Err != nil, f, "%s", res)
}

// resultFields are the journal fields of one connection's summary.
func resultFields(res tlsbridge.Result) map[string]string {
	f := map[string]string{
		"RSYNC_SSL_EXIT":        strconv.Itoa(res.RsyncExit),
		"RSYNC_SSL_BYTES_IN":    strconv.FormatInt(res.In, 10),
		"RSYNC_SSL_BYTES_OUT":   strconv.FormatInt(res.Out, 10),
		"RSYNC_SSL_DURATION_MS": strconv.FormatInt(res.Duration.Milliseconds(), 10),
	}
	addPeerFields(f, res.Peer)
	addSessionFields(f, res)
	if res.Module != "" {
		f["RSYNC_SSL_MODULE"] = res.Module
	}
	if res.Err != nil {
		f["RSYNC_SSL_ERROR"] = res.Err.Error()
	}
	return f
}

// logStart is the line and journal entry of a session whose rsync has
// just started: the summary's known part.
func logStart(log *logger, res tlsbridge.Result) {
	f := map[string]string{}
	addPeerFields(f, res.Peer)
	addSessionFields(f, res)
	log.Event(false, f, "%s", res.StartString())
}

func addPeerFields(f map[string]string, peer string) {
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		f["RSYNC_SSL_CLIENT"] = ap.Addr().Unmap().String()
		f["RSYNC_SSL_CLIENT_PORT"] = strconv.Itoa(int(ap.Port()))
	} else {
		f["RSYNC_SSL_CLIENT"] = peer
	}
}

// addSessionFields are the fields a session has from rsync's start on:
// DATAPATH is ktls or bridge, PAIR the socket pair's kind ("-" on ktls).
func addSessionFields(f map[string]string, res tlsbridge.Result) {
	for k, v := range map[string]string{"RSYNC_SSL_IDENTITY": res.Identity, "RSYNC_SSL_SNI": tlsbridge.SNIText(res.SNI),
		"RSYNC_SSL_TLS": res.Version, "RSYNC_SSL_CIPHER": res.Cipher, "RSYNC_SSL_DATAPATH": res.DataPath,
		"RSYNC_SSL_PAIR": res.Pair} {
		if v != "" {
			f[k] = v
		}
	}
	if res.RsyncPID > 0 {
		f["RSYNC_SSL_RSYNC_PID"] = strconv.Itoa(res.RsyncPID)
	}
}
