/*
 * Internal: the HTTP/3 client transport (h3_client*.c), bound through the
 * client binding interface. Included by the client core (src/client/) and
 * the HTTP/3 client's own files.
 */
#ifndef AMN_TRANSPORT_H3_CLIENT_H
#define AMN_TRANSPORT_H3_CLIENT_H

#include "transport/ctransport.h"

extern const amn_ctransport amn_h3c_transport;

#endif
