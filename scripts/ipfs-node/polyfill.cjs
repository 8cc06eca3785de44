'use strict'
// Loaded with NODE_OPTIONS=--require: Promise.withResolvers is ES2024 and
// absent from Node 20, but some of js-ipfs 0.66.1's dependencies call it.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
