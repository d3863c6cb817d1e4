package tlsbridge

import "fmt"

// ValidHostName says whether a client's SNI is a host name as RFC 1123 and
// RFC 6066 have it: dot-separated labels of letters, digits, "-" (and "_",
// which real names carry), each 1 to 63 bytes and not starting or ending
// with "-", 253 bytes in all. crypto/tls takes any bytes up to 64 KiB there,
// and nothing needs a certificate to send them.
func ValidHostName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 || s[i-1] == '-' {
				return false
			}
			label = 0
			continue
		case c == '-':
			if label == 0 {
				return false
			}
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && s[len(s)-1] != '-'
}

// SNIText is the SNI as a journal field may carry it: the name when it is a
// valid host name, else its length only; "" for none.
func SNIText(sni string) string {
	if sni == "" {
		return ""
	}
	return sniField(sni)
}

// sniField is the SNI as the summary line shows it: "-" for none, the name
// when it is a valid host name, else only its length, so that a client
// cannot write fields or control bytes into our log through it.
func sniField(sni string) string {
	switch {
	case sni == "":
		return "-"
	case ValidHostName(sni):
		return sni
	}
	return fmt.Sprintf("(invalid, %d bytes)", len(sni))
}
