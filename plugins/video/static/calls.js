// Video's web panel: ring / answer / decline, join / leave, mute / camera / hand, and
// real WebRTC media between browsers over our signaling (call.offer / call.answer /
// call.ice relayed by the server) with the ICE servers of /v1/calls/ice-servers.
//
// Mesh rule (docs/video.md): whoever joins offers to every participant already in the
// call; the others answer. ICE candidates that arrive before the remote description
// wait in a queue.

import { app, h } from "/static/web/app.js";

let area = null; // the call bar (mounted)
let call = null; // { id, conversationId, type, stream, peers: Map(userId → Peer), audio, video, hand }
let ringing = null; // { call_id, call } while an incoming call rings
const remoteState = new Map(); // user id → { audio, video, hand }

const safely = (fn) => (...args) =>
  Promise.resolve().then(() => fn(...args)).catch((err) => app.notice(err.message || String(err), "error"));

// -- for tests and other panels -------------------------------------------------------
export function peerStates() {
  const out = {};
  if (call) for (const [id, peer] of call.peers) out[id] = peer.pc.connectionState;
  return out;
}

export function currentCall() {
  return call ? { id: call.id, conversation_id: call.conversationId } : null;
}

// -- media and peers ------------------------------------------------------------------
async function iceServers() {
  try {
    const answer = await app.api.get("/v1/calls/ice-servers");
    return (answer.ice_servers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
  } catch {
    return [];
  }
}

async function localMedia(type) {
  return navigator.mediaDevices.getUserMedia({ audio: true, video: type === "video" });
}

function signal(kind, to, payload) {
  if (!call) return Promise.resolve();
  return app.socket.request(`call.${kind}`, { call_id: call.id, to_user_id: to, ...payload })
    .catch((err) => console.warn(`call.${kind} not relayed: ${err.message}`));
}

function peer(userId) {
  if (call.peers.has(userId)) return call.peers.get(userId);
  const pc = new RTCPeerConnection({ iceServers: call.iceServers });
  const entry = { pc, queued: [], userId };
  call.peers.set(userId, entry);
  for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
  pc.onicecandidate = (e) => signal("ice", userId, { candidate: e.candidate ? e.candidate.toJSON() : null });
  pc.ontrack = (e) => {
    const video = tile(userId).querySelector("video");
    if (video.srcObject !== e.streams[0]) video.srcObject = e.streams[0];
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") render();
    const el = tile(userId);
    el.dataset.pcState = pc.connectionState;
    el.querySelector(".pc-state").textContent = pc.connectionState;
  };
  return entry;
}

async function offerTo(userId) {
  const { pc } = peer(userId);
  await pc.setLocalDescription(await pc.createOffer());
  await signal("offer", userId, { sdp: pc.localDescription.sdp });
}

async function flush(entry) {
  for (const candidate of entry.queued.splice(0)) await entry.pc.addIceCandidate(candidate);
}

async function onOffer(data) {
  if (!call || data.call_id !== call.id) return;
  const entry = peer(data.from_user_id);
  await entry.pc.setRemoteDescription({ type: "offer", sdp: data.sdp });
  await flush(entry);
  await entry.pc.setLocalDescription(await entry.pc.createAnswer());
  await signal("answer", data.from_user_id, { sdp: entry.pc.localDescription.sdp });
}

async function onAnswer(data) {
  if (!call || data.call_id !== call.id || !call.peers.has(data.from_user_id)) return;
  const entry = call.peers.get(data.from_user_id);
  await entry.pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
  await flush(entry);
}

async function onIce(data) {
  if (!call || data.call_id !== call.id) return;
  const entry = peer(data.from_user_id);
  const candidate = data.candidate || null;
  if (!candidate) return; // end of candidates
  if (entry.pc.remoteDescription) await entry.pc.addIceCandidate(candidate);
  else entry.queued.push(candidate);
}

function dropPeer(userId) {
  const entry = call && call.peers.get(userId);
  if (entry) {
    entry.pc.close();
    call.peers.delete(userId);
  }
  const el = document.querySelector(`#call .tile[data-user-id="${CSS.escape(userId)}"]`);
  if (el) el.remove();
}

// -- lifecycle ------------------------------------------------------------------------
async function enter(callView, type, stream) {
  call = { id: callView.id, conversationId: callView.conversation_id, type, stream,
    peers: new Map(), audio: true, video: type === "video", hand: false,
    iceServers: await iceServers(), status: callView.status };
  render();
}

async function start(conversationId, type = "video") {
  if (call) throw new Error("you are already in a call");
  const stream = await localMedia(type);
  try {
    const created = await app.api.post(`/v1/conversations/${conversationId}/calls`, { type });
    await enter(created, type, stream);
  } catch (err) {
    for (const track of stream.getTracks()) track.stop();
    throw err;
  }
}

async function answer() {
  const incoming = ringing;
  if (!incoming || call) return;
  ringing = null;
  const type = incoming.call.type || "video";
  const stream = await localMedia(type);
  let joined;
  try {
    joined = await app.api.post(`/v1/calls/${incoming.call_id}/join`);
  } catch (err) {
    for (const track of stream.getTracks()) track.stop();
    render();
    throw err;
  }
  await enter(joined, type, stream);
  for (const p of joined.participants || []) {
    if (p.status === "joined" && p.user_id !== app.me.id) await offerTo(p.user_id);
  }
}

async function decline() {
  const incoming = ringing;
  ringing = null;
  render();
  if (incoming) await app.api.post(`/v1/calls/${incoming.call_id}/decline`);
}

function teardown() {
  if (!call) return;
  for (const entry of call.peers.values()) entry.pc.close();
  for (const track of call.stream.getTracks()) track.stop();
  call = null;
  remoteState.clear();
  render();
}

async function leave() {
  const id = call && call.id;
  teardown();
  if (id) await app.api.post(`/v1/calls/${id}/leave`);
}

async function toggle(what) {
  if (!call) return;
  call[what] = !call[what];
  if (what === "audio") for (const t of call.stream.getAudioTracks()) t.enabled = call.audio;
  if (what === "video") for (const t of call.stream.getVideoTracks()) t.enabled = call.video;
  render();
  await app.socket.request("call.state", { call_id: call.id, [what]: call[what] });
}

// -- view -----------------------------------------------------------------------------
function tile(userId) {
  let el = document.querySelector(`#call .tile[data-user-id="${CSS.escape(userId)}"]`);
  if (el) return el;
  el = h("figure", { class: "tile", dataset: { userId, pcState: "new" } },
    h("video", { autoplay: true, playsinline: true }),
    h("figcaption", {}, h("span", { class: "who" }, ""), " ",
      h("span", { class: "media-state" }, ""), " ", h("span", { class: "pc-state" }, "new")));
  app.userName(userId).then((name) => (el.querySelector(".who").textContent = name));
  document.getElementById("call-tiles").append(el);
  drawRemoteState(userId);
  return el;
}

function drawRemoteState(userId) {
  const el = document.querySelector(`#call .tile[data-user-id="${CSS.escape(userId)}"]`);
  const s = remoteState.get(userId);
  if (!el || !s) return;
  el.dataset.audio = String(s.audio !== false);
  el.dataset.video = String(s.video !== false);
  el.dataset.hand = String(Boolean(s.hand));
  el.querySelector(".media-state").textContent =
    [s.audio === false ? "muted" : "", s.video === false ? "camera off" : "", s.hand ? "✋ hand raised" : ""]
      .filter(Boolean).join(" · ");
}

// The call area keeps its tiles while the call lasts (moving a playing <video> would
// pause it); only the controls and the ringing banner are redrawn.
function render() {
  if (!area) return;
  const incoming = area.querySelector(".incoming-box");
  const controls = area.querySelector(".controls-box");
  const tiles = document.getElementById("call-tiles");
  area.hidden = !call && !ringing;
  incoming.replaceChildren();
  controls.replaceChildren();
  if (ringing && !call) {
    incoming.append(h("div", { id: "incoming-call", class: "incoming" },
      h("span", {}, `Incoming ${ringing.call.type || "video"} call`),
      h("button", { type: "button", id: "call-answer", onclick: safely(answer) }, "Answer"),
      h("button", { type: "button", id: "call-decline", class: "secondary", onclick: safely(decline) }, "Decline")));
  }
  if (!call) {
    tiles.replaceChildren();
    return;
  }
  if (!document.getElementById("call-local")) {
    const local = h("video", { id: "call-local", autoplay: true, playsinline: true, muted: true });
    local.muted = true;
    local.srcObject = call.stream;
    tiles.prepend(local);
  }
  controls.append(h("div", { class: "call-bar", dataset: { callId: call.id } },
    h("span", { id: "call-status" }, call.peers.size ? "in call" : "calling…"),
    h("button", { type: "button", id: "call-mute", class: "secondary", "aria-pressed": String(!call.audio), onclick: safely(() => toggle("audio")) }, call.audio ? "Mute" : "Unmute"),
    h("button", { type: "button", id: "call-camera", class: "secondary", "aria-pressed": String(!call.video), onclick: safely(() => toggle("video")) }, call.video ? "Camera off" : "Camera on"),
    h("button", { type: "button", id: "call-hand", class: "secondary", "aria-pressed": String(call.hand), onclick: safely(() => toggle("hand")) }, call.hand ? "Lower hand" : "Raise hand"),
    h("button", { type: "button", id: "call-leave", onclick: safely(leave) }, "Leave")));
}

// -- events ---------------------------------------------------------------------------
app.on("call.ringing", (data) => {
  if (call) return; // busy: it keeps ringing elsewhere until answered or missed
  ringing = data;
  render();
});
app.on("call.joined", (data) => {
  if (call && data.call_id === call.id && data.user_id !== app.me.id) {
    tile(data.user_id); // the newcomer offers to us
    render();
  }
});
app.on("call.left", (data) => {
  if (call && data.call_id === call.id) {
    if (data.user_id === app.me.id) teardown();
    else dropPeer(data.user_id);
  }
  if (ringing && data.call_id === ringing.call_id && data.user_id === app.me.id) {
    ringing = null;
    render();
  }
});
app.on("call.ended", (data) => {
  if (ringing && data.call_id === ringing.call_id) ringing = null;
  if (call && data.call_id === call.id) teardown();
  else render();
});
app.on("call.state", (data) => {
  if (!call || data.call_id !== call.id || data.user_id === app.me.id) return;
  remoteState.set(data.user_id, { ...(remoteState.get(data.user_id) || {}), ...data });
  drawRemoteState(data.user_id);
});
app.on("call.offer", safely(onOffer));
app.on("call.answer", safely(onAnswer));
app.on("call.ice", safely(onIce));
// after a reconnect: is the call still live?
app.on("open", safely(async () => {
  if (!call) return;
  try {
    const fresh = await app.api.get(`/v1/calls/${call.id}`);
    if (fresh.status === "ended") teardown();
  } catch (err) {
    if (err.status === 404 || err.status === 403) teardown();
  }
}));

app.addPanel({
  id: "calls",
  mount({ main }) {
    area = h("section", { id: "call", hidden: true }, h("div", { class: "incoming-box" }),
      h("div", { class: "controls-box" }), h("div", { id: "call-tiles", class: "tiles" }));
    main.prepend(area);
    render();
  },
  unmount() {
    teardown();
    ringing = null;
    area = null;
  },
});

app.use("chat").then((chat) => {
  chat.addComposerAction({ id: "start-call", label: "Video call", run: safely((id) => start(id, "video")) });
  chat.addComposerAction({ id: "start-voice-call", label: "Voice call", run: safely((id) => start(id, "audio")) });
});
