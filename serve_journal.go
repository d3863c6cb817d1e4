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
	if ap, err := netip.ParseAddrPort(res.Peer); err == nil {
		f["RSYNC_SSL_CLIENT"] = ap.Addr().Unmap().String()
		f["RSYNC_SSL_CLIENT_PORT"] = strconv.Itoa(int(ap.Port()))
	} else {
		f["RSYNC_SSL_CLIENT"] = res.Peer
	}
	for k, v := range map[string]string{"RSYNC_SSL_MODULE": res.Module, "RSYNC_SSL_IDENTITY": res.Identity,
		"RSYNC_SSL_SNI": tlsbridge.SNIText(res.SNI), "RSYNC_SSL_TLS": res.Version, "RSYNC_SSL_DATAPATH": res.DataPath, "RSYNC_SSL_PAIR": res.Pair} {
		if v != "" {
			f[k] = v
		}
	}
	if res.Err != nil {
		f["RSYNC_SSL_ERROR"] = res.Err.Error()
	}
	return f
}
