//go:build cgo

package pkcs11

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

// The few PKCS#11 declarations this file needs (PKCS #11 v2.40, pkcs11t.h
// and pkcs11f.h; default packing on every platform pskvault builds for).
typedef unsigned long ck_ulong;
typedef struct { ck_ulong type; void *value; ck_ulong len; } ck_attribute;
typedef ck_ulong (*ck_get_attribute_value)(ck_ulong session, ck_ulong object, ck_attribute *tmpl, ck_ulong count);
typedef struct { unsigned char major, minor; } ck_version;
// CK_FUNCTION_LIST up to C_GetAttributeValue, its 25th function.
typedef struct {
	ck_version version;
	void *before[24]; // C_Initialize ... C_GetObjectSize
	ck_get_attribute_value get_attribute_value;
} ck_function_list_head;
typedef ck_ulong (*ck_get_function_list)(ck_function_list_head **list);

// p11_get_attribute_value returns the module's C_GetAttributeValue, from
// the library already loaded (RTLD_NOLOAD: this never loads a module
// itself), or NULL.
static void *p11_get_attribute_value(const char *path) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (lib == NULL) return NULL;
	ck_get_function_list gfl = (ck_get_function_list)dlsym(lib, "C_GetFunctionList");
	ck_function_list_head *fl = NULL;
	void *fn = NULL;
	if (gfl != NULL && gfl(&fl) == 0 && fl != NULL) fn = (void *)fl->get_attribute_value;
	dlclose(lib); // drops only the reference taken above
	return fn;
}

// p11_read_ids reads CKA_ID of n objects, each into its own idlen-byte
// slot of ids, with one C_GetAttributeValue per object; rvs[i] is the
// return value and lens[i] the ID's length (CKR_BUFFER_TOO_SMALL for a
// longer one).
static void p11_read_ids(void *fn, ck_ulong session, const ck_ulong *objs, ck_ulong n,
		unsigned char *ids, ck_ulong idlen, ck_ulong *lens, ck_ulong *rvs) {
	ck_get_attribute_value get = (ck_get_attribute_value)fn;
	for (ck_ulong i = 0; i < n; i++) {
		ck_attribute a = { 0x102, ids + i * idlen, idlen }; // CKA_ID
		rvs[i] = get(session, objs[i], &a, 1);
		lens[i] = a.len;
	}
}
*/
import "C"

import (
	"sync"
	"unsafe"

	p11 "github.com/miekg/pkcs11"
)

// idReader reads many objects' CKA_IDs in one cgo call, with one
// C_GetAttributeValue each into a buffer of idLen bytes. miekg/pkcs11's
// GetAttributeValue calls C_GetAttributeValue twice per object (sizes,
// then values) and allocates both times; on SoftHSM2 each call re-checks
// the object's file, so the enumeration (index.go) paid for every object
// twice. The function comes from the module already loaded by
// miekg/pkcs11 (same library, same state).
type idReader struct {
	once sync.Once
	fn   unsafe.Pointer // C_GetAttributeValue, or nil: use miekg/pkcs11
}

func (r *idReader) init(path string) {
	r.once.Do(func() {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		r.fn = C.p11_get_attribute_value(cpath)
	})
}

// readIDs returns the CKA_ID of each of objs (nil for an object whose ID
// is not idLen bytes long) and the return value per object.
func (r *idReader) readIDs(p *p11.Ctx, s p11.SessionHandle, objs []p11.ObjectHandle) ([][]byte, []error) {
	ids := make([][]byte, len(objs))
	errs := make([]error, len(objs))
	if r.fn == nil {
		for i, o := range objs {
			id, err := readID(p, s, o)
			if err == nil && len(id) == idLen {
				ids[i] = id
			}
			errs[i] = err
		}
		return ids, errs
	}
	n := len(objs)
	if n == 0 {
		return ids, errs
	}
	cobjs := make([]C.ck_ulong, n)
	for i, o := range objs {
		cobjs[i] = C.ck_ulong(o)
	}
	buf := make([]byte, n*idLen)
	lens := make([]C.ck_ulong, n)
	rvs := make([]C.ck_ulong, n)
	C.p11_read_ids(r.fn, C.ck_ulong(s), &cobjs[0], C.ck_ulong(n),
		(*C.uchar)(unsafe.Pointer(&buf[0])), C.ck_ulong(idLen), &lens[0], &rvs[0])
	for i := range objs {
		switch {
		case rvs[i] == C.ck_ulong(p11.CKR_BUFFER_TOO_SMALL):
			// Longer than pskvault's IDs: not one of its keys.
		case rvs[i] != 0:
			errs[i] = p11.Error(rvs[i])
		case lens[i] == idLen:
			ids[i] = buf[i*idLen : (i+1)*idLen : (i+1)*idLen]
		}
	}
	return ids, errs
}
