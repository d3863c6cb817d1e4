package client

import (
	"fmt"
	"time"
)

// expiry says when the certificate expires; within a day, to the minute
// and as a warning, not as "0 days".
func (t *TLSReport) expiry() string {
	if t.DaysLeft > 0 {
		return fmt.Sprintf("expires %s (%d days)", t.NotAfter.Format("2006-01-02"), t.DaysLeft)
	}
	if time.Until(t.NotAfter) <= 0 {
		return "EXPIRED " + t.NotAfter.Format("2006-01-02 15:04 UTC")
	}
	return "expires " + t.NotAfter.Format("2006-01-02 15:04 UTC") + " (LESS THAN A DAY: renew it now)"
}

// modulesCount is "1 module", "3 modules".
func modulesCount(n int) string {
	if n == 1 {
		return "1 module"
	}
	return fmt.Sprintf("%d modules", n)
}
