'use strict'
// Stand-in for electron-webrtc (only tried under Electron). Failing on import is
// the same as the optional dependency being absent: no WebRTC in the test node.
throw new Error('electron-webrtc is stubbed out in meshd\'s IPFS test node')
