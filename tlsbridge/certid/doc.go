// Package certid names certificates the same way on both sides: public-key
// pins (sha256:BASE64 of the SubjectPublicKeyInfo), a certificate's DNS and
// IP names, distinguished names, serials and dates in mod_ssl's formats, and
// peer-supplied text made safe for one log line.
package certid
