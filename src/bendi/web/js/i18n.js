// The console's words in Chinese and English. The server marks the page with the browser's first
// language (Accept-Language); a choice made with the switch is kept in this browser.
// t("kb.added", {chunks: 3}) fills {chunks}; a missing key shows itself, so it is easy to spot.

const KEY = "bendi.lang";

const EN = {
  "app.name": "bendi",
  "app.tagline": "Local models, private knowledge",
  "nav.chat": "Chat", "nav.kb": "Knowledge bases", "nav.models": "Models", "nav.admin": "Administration",
  "nav.menu": "Menu", "nav.language": "中文", "nav.languageLabel": "Switch to Chinese",
  "nav.logout": "Log out", "nav.localMode": "Single-user mode (this computer)",
  "common.cancel": "Cancel", "common.close": "Close", "common.confirm": "Are you sure?", "common.copied": "Copied",
  "common.copy": "Copy", "common.copyFailed": "Could not copy", "common.create": "Create", "common.delete": "Delete",
  "common.error": "Something went wrong", "common.loading": "Loading…", "common.remove": "Remove", "common.save": "Save",
  "common.refresh": "Refresh", "common.yes": "yes", "common.no": "no",
  "login.title": "Sign in to bendi", "login.user": "User name", "login.password": "Password", "login.submit": "Sign in",
  "login.key": "API key", "login.keyHelp": "This server asks for its API key. It is kept in this tab only.",
  "login.failed": "Wrong user name or password",
  "chat.answerModel": "Answer model (knowledge bases)", "chat.default": "default",
  "chat.deleteConfirm": "Delete the conversation “{title}”?",
  "chat.hint": "Enter sends · Shift+Enter new line · Esc stops", "chat.history": "Conversations",
  "chat.knowledgeBases": "Knowledge bases", "chat.maxTokens": "Max tokens", "chat.model": "Model",
  "chat.models": "Models", "chat.new": "New chat", "chat.noHistory": "No conversations yet.",
  "chat.noModels": "No model is installed yet: see Models.",
  "chat.notFound": "Nothing in the knowledge base matched this question.",
  "chat.placeholder": "Ask anything…", "chat.reasoning": "Reasoning", "chat.regenerate": "Regenerate",
  "chat.send": "Send", "chat.settings": "Settings", "chat.sources": "Sources", "chat.stop": "Stop",
  "chat.stopped": "stopped", "chat.system": "System prompt",
  "chat.systemPlaceholder": "How the assistant should answer (e.g. “Answer briefly, in English.”)",
  "chat.temperature": "Temperature", "chat.thinking": "Thinking…", "chat.thought": "Thought for {s} s",
  "chat.tokens": "{n} tokens", "chat.truncated": "cut at the token limit",
  "chat.ungrounded": "not supported by the sources", "chat.untitled": "New conversation",
  "chat.using": "Answering with {model}", "chat.waiting": "Waiting for the answer",
  "chat.welcome": "What can I help with?", "chat.welcomeKb": "Ask the knowledge base “{name}”",
  "chat.example1": "Explain what a context window is, briefly.",
  "chat.example2": "Write a Python function that reverses a string.",
  "chat.example3": "Draft a short notice about a system maintenance window.",
  "chat.exampleKb1": "What does this knowledge base cover?",
  "chat.exampleKb2": "Summarise the most important rules.",
  "chat.exampleKb3": "Which document talks about safety?",
  "kb.title": "Knowledge bases", "kb.subtitle": "Your documents, searchable and answerable with citations.",
  "kb.added": "added · {chunks} passages", "kb.addedAt": "Added", "kb.ask": "Ask",
  "kb.belowThreshold": "below the relevance threshold", "kb.chooseFiles": "Choose files",
  "kb.chooseFolder": "Choose a folder", "kb.chunks": "passages", "kb.create": "New knowledge base",
  "kb.delete": "Delete", "kb.deleteConfirm": "Delete the knowledge base “{name}” and all its documents?",
  "kb.docName": "Document", "kb.documents": "documents", "kb.documentsTab": "Documents",
  "kb.dropFormats": "PDF, Word, Excel, PowerPoint, HTML, Markdown, text",
  "kb.dropTitle": "Drop files or folders here", "kb.embedder": "embedder", "kb.failed": "failed: {error}",
  "kb.failures": "Files that could not be read", "kb.format": "Format", "kb.fused": "score", "kb.lexical": "words",
  "kb.name": "Name", "kb.nameHelp": "Letters, digits, - and _ (e.g. safety-manuals).",
  "kb.noDocs": "No documents yet", "kb.noDocsHint": "Drop files above to add them.",
  "kb.noResults": "No passages found", "kb.noResultsHint": "Tick “show all” to see weaker matches.",
  "kb.none": "No knowledge bases yet", "kb.noneHint": "Create one, then drop your documents into it.",
  "kb.noneMember": "An administrator has not shared a knowledge base with you yet.",
  "kb.pages": "Pages", "kb.passages": "Passages", "kb.processing": "reading and indexing…", "kb.removeDocConfirm": "Remove “{name}” from the knowledge base?",
  "kb.removed": "Removed {name}", "kb.score": "score", "kb.search": "Search",
  "kb.searchPlaceholder": "Search the documents…", "kb.searchStats": "{n} passages · {ms} ms · {legs}",
  "kb.searchTab": "Search", "kb.showAll": "show all", "kb.size": "Size", "kb.unchanged": "unchanged (already here)",
  "kb.updated": "updated · {chunks} passages", "kb.uploading": "uploading…", "kb.vector": "meaning",
  "kb.vectors": "Computing vectors: {done} of {total} passages", "kb.waiting": "waiting",
  "models.title": "Models", "models.subtitle": "What is installed, what is loaded, and what this machine can run.",
  "models.forever": "never", "models.installed": "Installed", "models.loaded": "Loaded now",
  "models.plan": "Plan for this machine", "models.name": "Model", "models.size": "Size",
  "models.quant": "Quantization", "models.context": "Context", "models.verdict": "On this machine",
  "models.memory": "Memory", "models.expires": "Unloads", "models.params": "Parameters",
  "models.noneLoaded": "No model is loaded. A model loads on its first request.",
  "models.noneInstalled": "No model installed.", "models.import": "Import a file", "models.pull": "Pull",
  "models.copy": "Copy", "models.remove": "Remove", "models.removeConfirm": "Remove the model “{name}”?",
  "models.copyTo": "New name", "models.path": "Path of a GGUF file on the server",
  "models.pullName": "Model name (e.g. qwen2.5:0.5b)", "models.pulling": "Pulling {name}",
  "models.pulled": "{name} is installed", "models.imported": "{name} is installed", "models.copied": "Copied to {name}",
  "models.machine": "This machine: {ram} memory, {bw} memory speed{gpus}", "models.speed": "Speed",
  "models.fits": "fits", "models.tight": "tight", "models.noFit": "does not fit", "models.recommended": "Recommended",
  "models.catalog": "Catalog", "models.slots": "{n} parallel slots",
  "passage.page": "p. {page}", "passage.rows": "rows {from}–{to}", "passage.sheet": "sheet {sheet}",
  "passage.source": "Source {n}", "passage.title": "Cited passage",
  "admin.title": "Administration",
};

const ZH = {
  "app.name": "本地", "app.tagline": "本地模型，私有知识",
  "nav.chat": "对话", "nav.kb": "知识库", "nav.models": "模型", "nav.admin": "管理",
  "nav.menu": "菜单", "nav.language": "English", "nav.languageLabel": "切换到英文",
  "nav.logout": "退出登录", "nav.localMode": "单用户模式（本机）",
  "common.cancel": "取消", "common.close": "关闭", "common.confirm": "确定吗？", "common.copied": "已复制",
  "common.copy": "复制", "common.copyFailed": "复制失败", "common.create": "创建", "common.delete": "删除",
  "common.error": "出错了", "common.loading": "加载中…", "common.remove": "移除", "common.save": "保存",
  "common.refresh": "刷新", "common.yes": "是", "common.no": "否",
  "login.title": "登录本地", "login.user": "用户名", "login.password": "密码", "login.submit": "登录",
  "login.key": "API 密钥", "login.keyHelp": "此服务器需要 API 密钥，仅保存在当前标签页。",
  "login.failed": "用户名或密码错误",
  "chat.answerModel": "回答模型（知识库）", "chat.default": "默认",
  "chat.deleteConfirm": "删除对话“{title}”？",
  "chat.hint": "Enter 发送 · Shift+Enter 换行 · Esc 停止", "chat.history": "对话记录",
  "chat.knowledgeBases": "知识库", "chat.maxTokens": "最大长度（token）", "chat.model": "模型",
  "chat.models": "模型", "chat.new": "新对话", "chat.noHistory": "还没有对话。",
  "chat.noModels": "还没有安装模型：请到“模型”页面。",
  "chat.notFound": "知识库中没有与此问题相关的内容。",
  "chat.placeholder": "输入问题…", "chat.reasoning": "思考过程", "chat.regenerate": "重新生成",
  "chat.send": "发送", "chat.settings": "设置", "chat.sources": "来源", "chat.stop": "停止",
  "chat.stopped": "已停止", "chat.system": "系统提示词",
  "chat.systemPlaceholder": "助手应如何回答（例如“请用中文简要回答。”）",
  "chat.temperature": "温度", "chat.thinking": "思考中…", "chat.thought": "已思考 {s} 秒",
  "chat.tokens": "{n} 个 token", "chat.truncated": "已达长度上限",
  "chat.ungrounded": "来源不支持此回答", "chat.untitled": "新对话",
  "chat.using": "由 {model} 回答", "chat.waiting": "等待回答",
  "chat.welcome": "有什么可以帮您？", "chat.welcomeKb": "向知识库“{name}”提问",
  "chat.example1": "简要解释什么是上下文窗口。",
  "chat.example2": "写一个反转字符串的 Python 函数。",
  "chat.example3": "起草一份系统维护通知。",
  "chat.exampleKb1": "这个知识库包含哪些内容？",
  "chat.exampleKb2": "总结最重要的规定。",
  "chat.exampleKb3": "哪份文件讲到了安全？",
  "kb.title": "知识库", "kb.subtitle": "您的文档：可检索，回答附引用。",
  "kb.added": "已添加 · {chunks} 段", "kb.addedAt": "添加时间", "kb.ask": "提问",
  "kb.belowThreshold": "低于相关度阈值", "kb.chooseFiles": "选择文件",
  "kb.chooseFolder": "选择文件夹", "kb.chunks": "段落", "kb.create": "新建知识库",
  "kb.delete": "删除", "kb.deleteConfirm": "删除知识库“{name}”及其全部文档？",
  "kb.docName": "文档", "kb.documents": "个文档", "kb.documentsTab": "文档",
  "kb.dropFormats": "PDF、Word、Excel、PowerPoint、HTML、Markdown、文本",
  "kb.dropTitle": "将文件或文件夹拖到这里", "kb.embedder": "向量模型", "kb.failed": "失败：{error}",
  "kb.failures": "无法读取的文件", "kb.format": "格式", "kb.fused": "得分", "kb.lexical": "词语",
  "kb.name": "名称", "kb.nameHelp": "字母、数字、- 和 _（例如 safety-manuals）。",
  "kb.noDocs": "还没有文档", "kb.noDocsHint": "将文件拖到上方即可添加。",
  "kb.noResults": "没有找到段落", "kb.noResultsHint": "勾选“显示全部”可查看相关度较低的结果。",
  "kb.none": "还没有知识库", "kb.noneHint": "新建一个，然后拖入您的文档。",
  "kb.noneMember": "管理员尚未与您共享知识库。",
  "kb.pages": "页数", "kb.passages": "段落数", "kb.processing": "正在读取并建立索引…", "kb.removeDocConfirm": "从知识库中移除“{name}”？",
  "kb.removed": "已移除 {name}", "kb.score": "得分", "kb.search": "搜索",
  "kb.searchPlaceholder": "搜索文档…", "kb.searchStats": "{n} 段 · {ms} 毫秒 · {legs}",
  "kb.searchTab": "搜索", "kb.showAll": "显示全部", "kb.size": "大小", "kb.unchanged": "未变化（已存在）",
  "kb.updated": "已更新 · {chunks} 段", "kb.uploading": "上传中…", "kb.vector": "语义",
  "kb.vectors": "正在计算向量：{done} / {total} 段", "kb.waiting": "等待中",
  "models.title": "模型", "models.subtitle": "已安装、已加载的模型，以及本机能运行什么。",
  "models.forever": "不卸载", "models.installed": "已安装", "models.loaded": "已加载",
  "models.plan": "本机运行方案", "models.name": "模型", "models.size": "大小",
  "models.quant": "量化", "models.context": "上下文", "models.verdict": "本机评估",
  "models.memory": "内存", "models.expires": "卸载时间", "models.params": "参数量",
  "models.noneLoaded": "没有已加载的模型。模型在第一次请求时加载。",
  "models.noneInstalled": "没有已安装的模型。", "models.import": "导入文件", "models.pull": "下载",
  "models.copy": "复制", "models.remove": "移除", "models.removeConfirm": "移除模型“{name}”？",
  "models.copyTo": "新名称", "models.path": "服务器上 GGUF 文件的路径",
  "models.pullName": "模型名称（例如 qwen2.5:0.5b）", "models.pulling": "正在下载 {name}",
  "models.pulled": "{name} 已安装", "models.imported": "{name} 已安装", "models.copied": "已复制为 {name}",
  "models.machine": "本机：内存 {ram}，内存带宽 {bw}{gpus}", "models.speed": "速度",
  "models.fits": "可运行", "models.tight": "勉强", "models.noFit": "无法运行", "models.recommended": "推荐",
  "models.catalog": "目录", "models.slots": "{n} 个并行槽位",
  "passage.page": "第 {page} 页", "passage.rows": "第 {from}–{to} 行", "passage.sheet": "工作表 {sheet}",
  "passage.source": "来源 {n}", "passage.title": "引用段落",
  "admin.title": "管理",
};

const TABLES = {en: EN, zh: ZH};

function initial() {
  const saved = localStorage.getItem(KEY);
  if (saved && TABLES[saved]) return saved;
  const marked = document.documentElement.dataset.lang;  // from Accept-Language, set by the server
  if (marked && TABLES[marked]) return marked;
  return (navigator.languages || [navigator.language || "en"])[0].toLowerCase().startsWith("zh") ? "zh" : "en";
}

let current = initial();
document.documentElement.lang = current === "zh" ? "zh-CN" : "en";

export function lang() { return current; }

/** Switch the language (kept in this browser); the app redraws the page. */
export function setLang(code) {
  if (!TABLES[code]) return;
  current = code;
  localStorage.setItem(KEY, code);
  document.documentElement.lang = code === "zh" ? "zh-CN" : "en";
  document.documentElement.dataset.lang = code;
}

export function t(key, vars) {
  const text = TABLES[current][key] ?? EN[key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}
