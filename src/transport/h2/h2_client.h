/*
 * Internal: the HTTP/2 client transport (h2_client.c), bound through the
 * client binding interface. Included by the client core (src/client/).
 */
#ifndef AMN_TRANSPORT_H2_CLIENT_H
#define AMN_TRANSPORT_H2_CLIENT_H

#include "transport/ctransport.h"

extern const amn_ctransport amn_h2c_transport;

#endif
