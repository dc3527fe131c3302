package fec

import "crypto/subtle"

// GF(2^8) with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D)
// and generator α = 2, the field OpenPGM's tables use.
const poly = 0x11d

var (
	expTable [510]byte      // α^i for i < 510, so exp[log a + log b] needs no modulo
	logTable [256]byte      // log_α(a); logTable[0] is unused
	mulTable [256][256]byte // mulTable[a][b] = a·b: one lookup per byte in mulAdd
)

func init() {
	x := 1
	for i := 0; i < 255; i++ {
		expTable[i] = byte(x)
		expTable[i+255] = byte(x)
		logTable[x] = byte(i)
		x <<= 1
		if x&0x100 != 0 {
			x ^= poly
		}
	}
	for a := 1; a < 256; a++ {
		for b := 1; b < 256; b++ {
			mulTable[a][b] = expTable[int(logTable[a])+int(logTable[b])]
		}
	}
}

func gfMul(a, b byte) byte { return mulTable[a][b] }

// gfInv returns a⁻¹; a must not be 0.
func gfInv(a byte) byte { return expTable[255-int(logTable[a])] }

// mulAdd sets dst[i] ^= c·src[i] for i < len(dst); src must be at least as long.
func mulAdd(dst, src []byte, c byte) {
	switch c {
	case 0:
		return
	case 1:
		subtle.XORBytes(dst, dst, src[:len(dst)])
		return
	}
	t := &mulTable[c]
	src = src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		d, s := dst[i:i+8:i+8], src[i:i+8:i+8]
		d[0] ^= t[s[0]]
		d[1] ^= t[s[1]]
		d[2] ^= t[s[2]]
		d[3] ^= t[s[3]]
		d[4] ^= t[s[4]]
		d[5] ^= t[s[5]]
		d[6] ^= t[s[6]]
		d[7] ^= t[s[7]]
	}
	for ; i < len(dst); i++ {
		dst[i] ^= t[src[i]]
	}
}

// mulSet sets dst[i] = c·src[i].
func mulSet(dst, src []byte, c byte) {
	switch c {
	case 0:
		clear(dst)
		return
	case 1:
		copy(dst, src[:len(dst)])
		return
	}
	t := &mulTable[c]
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = t[src[i]]
	}
}

// invert replaces the n×n row-major matrix m by its inverse (Gauss–Jordan
// with row swaps), using work (n×n) as scratch. It reports false if m is
// singular, leaving m undefined.
func invert(m, work []byte, n int) bool {
	inv := work[:n*n]
	clear(inv)
	for i := 0; i < n; i++ {
		inv[i*n+i] = 1
	}
	for col := 0; col < n; col++ {
		p := -1
		for r := col; r < n; r++ {
			if m[r*n+col] != 0 {
				p = r
				break
			}
		}
		if p < 0 {
			return false
		}
		if p != col {
			swapRows(m, n, p, col)
			swapRows(inv, n, p, col)
		}
		if c := m[col*n+col]; c != 1 {
			ci := gfInv(c)
			mulSet(m[col*n:col*n+n], m[col*n:col*n+n], ci)
			mulSet(inv[col*n:col*n+n], inv[col*n:col*n+n], ci)
		}
		for r := 0; r < n; r++ {
			if r == col {
				continue
			}
			if c := m[r*n+col]; c != 0 {
				mulAdd(m[r*n:r*n+n], m[col*n:col*n+n], c)
				mulAdd(inv[r*n:r*n+n], inv[col*n:col*n+n], c)
			}
		}
	}
	copy(m[:n*n], inv)
	return true
}

func swapRows(m []byte, n, a, b int) {
	ra, rb := m[a*n:a*n+n], m[b*n:b*n+n]
	for i := range ra {
		ra[i], rb[i] = rb[i], ra[i]
	}
}
