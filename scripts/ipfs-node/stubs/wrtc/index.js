'use strict'
// Stand-in for wrtc. ipfs-daemon imports it inside try/catch and enables the
// webrtc-star transport only if the import succeeds, so failing here is the
// same as the optional dependency being absent: meshd's test node has no WebRTC.
throw new Error('wrtc is stubbed out in meshd\'s IPFS test node')
