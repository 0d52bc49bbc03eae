{{/* Names: <release> is also the manager's JOBQUEUE_KUBERNETES_RELEASE (at most 22 characters). */}}
{{- define "jobqueue.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 22 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 22 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "jobqueue.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "jobqueue.fullname" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "jobqueue.managerSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "jobqueue.fullname" . }}
app.kubernetes.io/component: manager
{{- end -}}

{{- define "jobqueue.apiSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "jobqueue.fullname" . }}
app.kubernetes.io/component: api
{{- end -}}

{{/* The labels the manager puts on every consumer pod of this release (manager/backends/kube_objects.py). */}}
{{- define "jobqueue.consumerSelector" -}}
jobqueue.io/release: {{ include "jobqueue.fullname" . }}
app.kubernetes.io/component: consumer
{{- end -}}

{{/* policy/v1 from Kubernetes 1.21; 1.20 serves only policy/v1beta1 (same fields for what the chart sets). */}}
{{- define "jobqueue.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

{{- define "jobqueue.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "jobqueue.managerServiceAccount" -}}{{ include "jobqueue.fullname" . }}-manager{{- end -}}
{{- define "jobqueue.consumerServiceAccount" -}}{{ include "jobqueue.fullname" . }}-consumer{{- end -}}

{{/* envFrom shared by the manager and every consumer: settings, Redis URL, S3 credentials. */}}
{{- define "jobqueue.envFrom" -}}
- configMapRef:
    name: {{ include "jobqueue.fullname" . }}-env
- secretRef:
    name: {{ required "redis.existingSecret: the name of a Secret with key JOBQUEUE_REDIS_URL" .Values.redis.existingSecret }}
{{- with .Values.storage.s3.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Volumes shared by the manager and every consumer: the config files and the Redis CA. */}}
{{- define "jobqueue.configVolumes" -}}
- name: config
  configMap:
    name: {{ include "jobqueue.fullname" . }}-config
{{- with .Values.redis.tls.caSecret }}
- name: redis-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end -}}

{{- define "jobqueue.configMounts" -}}
- name: config
  mountPath: /etc/jobqueue/config
  readOnly: true
{{- if .Values.redis.tls.caSecret }}
- name: redis-tls
  mountPath: /etc/jobqueue/redis-tls
  readOnly: true
{{- end }}
{{- end -}}
