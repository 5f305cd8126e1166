/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-net — umbrella header. */
#ifndef AMN_AMN_H
#define AMN_AMN_H
#include "common.h"
#include "config.h"
#include "pki.h"
#include "proto.h"
#include "server.h"
#include "client.h"
#include "plugin.h"
#endif
