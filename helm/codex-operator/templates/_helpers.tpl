{{- define "codex-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codex-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codex-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codex-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "codex-operator.labels" -}}
{{ include "codex-operator.selectorLabels" . }}
app.kubernetes.io/part-of: codex-operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "codex-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codex-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "codex-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* CODEX_RUNTIME_IMAGES: "name=image,..." from .Values.runtimes, sorted by name. */}}
{{- define "codex-operator.runtimeImages" -}}
{{- $images := list -}}
{{- range $name, $runtime := .Values.runtimes -}}
{{- $images = append $images (printf "%s=%s" $name $runtime.image) -}}
{{- end -}}
{{- join "," $images -}}
{{- end -}}

{{/* Peering (HA) is on when more than one replica runs. */}}
{{- define "codex-operator.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}{{ include "codex-operator.fullname" . }}{{- end -}}
{{- end -}}

{{/* The watched namespaces, validated: namespaced mode needs at least one. */}}
{{- define "codex-operator.namespaces" -}}
{{- if eq .Values.watch.mode "namespaces" -}}
{{- if not .Values.watch.namespaces -}}
{{- fail "watch.namespaces must list at least one namespace when watch.mode is namespaces" -}}
{{- end -}}
{{- join "," .Values.watch.namespaces -}}
{{- end -}}
{{- end -}}
