// Package router turns PacketCapture resources into per-node capture
// commands on JetStream and writes the nodes' status back to the resources.
//
// This file set so far holds ValidatePacketCapture, the one check of what
// the CRD's OpenAPI schema cannot express; the router and the CLI both call
// it so a capture is judged the same way everywhere.
package router
