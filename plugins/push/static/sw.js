// Push's service worker: shows a notification for each Web Push the server sends
// (the payload is JSON: see docs/push.md "Payloads") and brings the web client to the
// front when it is clicked. It never fetches or caches anything.

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const title = data.type === "call" ? "Incoming call" : data.type === "test" ? "Test notification" : "New message";
  const body = data.body || (data.encrypted ? "Encrypted message" : "Open SecureConnect to read it");
  const tag = data.type === "call" ? `call:${data.call_id}` : data.conversation_id ? `conv:${data.conversation_id}` : "sc";
  event.waitUntil(self.registration.showNotification(title, { body, tag, data }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).pathname === "/" && "focus" in client) return client.focus();
    }
    return self.clients.openWindow("/");
  })());
});
