//! SDP offer/answer (RFC 3264) for the codecs the appliance speaks: PCMU, PCMA, telephone-event, opus/48000/2.
