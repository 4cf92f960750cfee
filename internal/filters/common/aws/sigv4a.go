package aws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
)

// SigV4A signs with an ECDSA P-256 key derived from the secret key
// (Envoy's sigv4a_key_derivation.cc, after aws-c-auth's key_derivation.c:
// NIST SP 800-108 HMAC-SHA256 in counter mode over "AWS4A"+secret, the
// candidate accepted when it is at most n-2, the private key being it plus
// one). The signature is the hex of the DER ECDSA signature of the SHA-256
// of the string to sign.

// derivedKey is a cached SigV4A key.
type derivedKey struct {
	akid, secret string
	key          *ecdsa.PrivateKey
}

// p256NMinus2 is the order of P-256 minus two, big-endian.
var p256NMinus2 = new(big.Int).Sub(elliptic.P256().Params().N, big.NewInt(2))

// DeriveV4AKey derives the SigV4A private key of an access key pair.
func DeriveV4AKey(akid, secret string) (*ecdsa.PrivateKey, error) {
	key := []byte("AWS4A" + secret)
	for counter := 1; counter <= 254; counter++ {
		in := make([]byte, 0, 32+len(akid)+8)
		in = append(in, 0, 0, 0, 1)
		in = append(in, algoV4A...)
		in = append(in, 0)
		in = append(in, akid...)
		in = append(in, byte(counter))
		in = append(in, 0, 0, 1, 0) // 256 bits
		m := hmac.New(sha256.New, key)
		m.Write(in)
		k0 := new(big.Int).SetBytes(m.Sum(nil))
		if k0.Cmp(p256NMinus2) > 0 {
			continue
		}
		d := k0.Add(k0, big.NewInt(1))
		return ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
	}
	return nil, errors.New("SigV4A key derivation exceeded its counter")
}

func (s *Signer) signV4A(c Credentials, stringToSign string) (string, error) {
	dk := s.v4aKey.Load()
	if dk == nil || dk.akid != c.AccessKeyID || dk.secret != c.SecretAccessKey {
		k, err := DeriveV4AKey(c.AccessKeyID, c.SecretAccessKey)
		if err != nil {
			return "", err
		}
		dk = &derivedKey{akid: c.AccessKeyID, secret: c.SecretAccessKey, key: k}
		s.v4aKey.Store(dk)
	}
	h := sha256.Sum256([]byte(stringToSign))
	sig, err := ecdsa.SignASN1(rand.Reader, dk.key, h[:])
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sig), nil
}
